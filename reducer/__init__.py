"""The reduce side: normalise stored records and load them into the vector index."""
