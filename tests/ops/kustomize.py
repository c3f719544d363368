"""A small, offline kustomize for the subset k8s/ uses (there is no kubectl in CI).

Supported: ``resources`` (files and directories), ``components``, ``patches`` (``path``
only: strategic-merge patches, including ``$patch: delete`` of a whole object),
``namespace`` and ``images`` (name -> newName/newTag). Anything else in a
kustomization.yaml is an error, so k8s/ cannot silently grow past what is tested.

Strategic merge: maps merge recursively (``null`` deletes a key); lists of named items
(containers, initContainers, env, volumes, volumeMounts, ports) of built-in kinds merge
by ``name``, and the items a patch adds come first, as kustomize puts them; every other
list is replaced, as kustomize does for custom resources.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "patches",
                  "images"}
MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _builtin(doc: Doc) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return group in ("", "apps", "batch", "policy", "autoscaling") or group.endswith(
        ".k8s.io")


def merge(base: Any, patch: Any, builtin: bool) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out and key in MERGE_BY_NAME and builtin and isinstance(value, list):
                out[key] = _merge_named(out[key], value, builtin)
            elif key in out:
                out[key] = merge(out[key], value, builtin)
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(patch)


def _merge_named(base: list[Any], patch: list[Any], builtin: bool) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get("name", item.get("containerPort")) if isinstance(item, dict) else item

    out = [copy.deepcopy(item) for item in base]
    index = {ident(item): i for i, item in enumerate(out)}
    added = []
    for item in patch:
        if ident(item) in index:
            out[index[ident(item)]] = merge(out[index[ident(item)]], item, builtin)
        else:
            added.append(copy.deepcopy(item))
    return added + out  # kustomize puts the items a patch adds first, in patch order


def _apply_patch(docs: list[Doc], patch: Doc, where: Path) -> list[Doc]:
    matches = [i for i, doc in enumerate(docs) if _key(doc) == _key(patch)]
    if not matches:
        raise ValueError(f"{where}: patch target {_key(patch)} not found")
    if patch.get("$patch") == "delete":
        return [doc for i, doc in enumerate(docs) if i not in matches]
    for i in matches:
        docs[i] = merge(docs[i], patch, _builtin(docs[i]))
    return docs


def _set_images(docs: list[Doc], images: list[dict[str, str]]) -> None:
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, _ = container["image"].partition(":")
            for image in images:
                if image["name"] == name:
                    new = image.get("newName", name)
                    tag = image.get("newTag")
                    container["image"] = f"{new}:{tag}" if tag else new


def build(root: Path, *, component: bool = False) -> list[Doc]:
    """Render the kustomization (or component) in ``root``: the list of objects."""
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"{root}: unsupported kustomization keys {sorted(unknown)}")
    expected = "Component" if component else "Kustomization"
    if spec.get("kind", "Kustomization") != expected:
        raise ValueError(f"{root}: expected kind {expected}")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = (root / entry).resolve()
        docs += build(path) if path.is_dir() else load_docs(path)
    return apply(root, spec, docs)


def apply(root: Path, spec: dict[str, Any], docs: list[Doc]) -> list[Doc]:
    for entry in spec.get("components", []):
        comp_root = (root / entry).resolve()
        comp = yaml.safe_load((comp_root / "kustomization.yaml").read_text())
        if comp.get("kind") != "Component" or set(comp) - SUPPORTED_KEYS:
            raise ValueError(f"{comp_root}: not a supported Component")
        for res in comp.get("resources", []):
            docs += load_docs(comp_root / res)
        docs = apply(comp_root, {k: v for k, v in comp.items() if k != "resources"}, docs)
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise ValueError(f"{root}: only `patches: - path: FILE` is supported")
        for patch in load_docs(root / entry["path"]):
            docs = _apply_patch(docs, patch, root / entry["path"])
    if spec.get("namespace"):
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    if spec.get("images"):
        _set_images(docs, spec["images"])
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        if _key(doc) in seen:
            raise ValueError(f"{root}: duplicate object {_key(doc)}")
        seen.add(_key(doc))
    return docs
