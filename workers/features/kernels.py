"""Compiled (numba) loops for the few steps numpy can only do in several full passes.

Each kernel reproduces a library computation operation for operation (same float types,
same order of additions), so its results equal the library's; the tests in
``tests/unit/workers/features/test_kernels.py`` compare them. numba is already a
dependency (librosa's); kernels are cached in ``NUMBA_CACHE_DIR`` and compiled by the
worker's warm-up for the float32 arrays the extractor passes, so a real clip never
triggers a compilation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
import scipy.sparse


@numba.njit(inline="always")
def _biquad(
    x: float, section: tuple, z1: float, z2: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """One sample through one section in scipy.signal.sosfilt's transposed direct form II:
    returns the output and the section's new state."""
    b0, b1, b2, a1, a2 = section
    y = b0 * x + z1
    return y, b1 * x - a1 * y + z2, b2 * x - a2 * y


@numba.njit(cache=True, nogil=True)
def _biquad_pair_segment_energy(
    x: np.ndarray, sos: np.ndarray, edges: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled; exercised through its wrapper
    n_channels = x.shape[0]
    out = np.zeros((n_channels, edges.size - 1))
    s0 = (sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5])
    s1 = (sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5])
    # Two channels per pass: each biquad is a serial recurrence, and running two
    # independent ones side by side keeps the FPU busy while each waits on its last value.
    for first in range(0, n_channels, 2):
        second = min(first + 1, n_channels - 1)
        p1 = p2 = p3 = p4 = 0.0  # first channel: section 0 (z1, z2), section 1 (z1, z2)
        q1 = q2 = q3 = q4 = 0.0  # second channel
        sum_p = sum_q = 0.0
        segment = -1  # samples before edges[0] only warm the filters up
        boundary = edges[0]
        for i in range(edges[-1]):
            if i == boundary:
                if segment >= 0:
                    out[first, segment] = sum_p
                    out[second, segment] = sum_q
                sum_p = sum_q = 0.0
                segment += 1
                boundary = edges[segment + 1]
            u, p1, p2 = _biquad(np.float64(x[first, i]), s0, p1, p2)
            v, q1, q2 = _biquad(np.float64(x[second, i]), s0, q1, q2)
            u, p3, p4 = _biquad(u, s1, p3, p4)
            v, q3, q4 = _biquad(v, s1, q3, q4)
            sum_p += u * u
            sum_q += v * v
        if segment >= 0:
            out[first, segment] = sum_p
            out[second, segment] = sum_q
    return out


def filtered_segment_energy(x: np.ndarray, sos: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Energy of each channel of ``x`` filtered by a two-section IIR cascade, per segment.

    Equal (to float64 summation order) to::

        f = scipy.signal.sosfilt(sos, x, axis=1)
        [np.sum(f[:, a:b] ** 2, axis=1) for a, b in zip(edges[:-1], edges[1:])]

    in one pass, without the filtered signal in memory. The arithmetic is float64
    whatever the input's float type (float32 input is not copied).

    Parameters
    ----------
    x : np.ndarray, shape (n_channels, n)
    sos : np.ndarray, shape (2, 6), second-order sections with ``a0 == 1``
    edges : np.ndarray, increasing sample indices, ``edges[-1] <= n``, at least two

    Returns
    -------
    np.ndarray, shape (n_channels, len(edges) - 1), float64
    """
    data = np.ascontiguousarray(x)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    coefficients = np.ascontiguousarray(sos, dtype=np.float64)
    bounds = np.ascontiguousarray(edges, dtype=np.int64)
    if data.ndim != 2 or coefficients.shape != (2, 6) or not np.all(coefficients[:, 3] == 1.0):
        raise ValueError("expected x of shape (channels, n) and two normalised sections")
    if bounds.ndim != 1 or bounds.size < 2 or bounds[0] < 0 or bounds[-1] > data.shape[1]:
        raise ValueError("edges must be at least two sample indices within the signal")
    if np.any(np.diff(bounds) <= 0):
        raise ValueError("edges must be strictly increasing")
    if data.shape[0] == 0:
        return np.zeros((0, bounds.size - 1))
    return _biquad_pair_segment_energy(data, coefficients, bounds)


@numba.njit(cache=True, nogil=True)
def _rolloff_bins(frames: np.ndarray, threshold: np.ndarray) -> np.ndarray:  # pragma: no cover
    n_frames, n_bins = frames.shape
    rolloff = np.zeros(n_frames, dtype=np.int64)
    # The first bin where the float32 running sum (np.cumsum's) reaches the frame's
    # threshold; two frames per pass, as the moments below, for the same reason.
    for t in range(0, n_frames - 1, 2):
        running_a = running_b = np.float32(0.0)
        found_a = found_b = -1
        for k in range(n_bins):
            running_a += frames[t, k]
            running_b += frames[t + 1, k]
            if found_a < 0 and running_a >= threshold[t]:
                found_a = k
            if found_b < 0 and running_b >= threshold[t + 1]:
                found_b = k
            if found_a >= 0 and found_b >= 0:
                break
        rolloff[t], rolloff[t + 1] = max(found_a, 0), max(found_b, 0)
    if n_frames % 2:
        t = n_frames - 1
        running = np.float32(0.0)
        for k in range(n_bins):
            running += frames[t, k]
            if running >= threshold[t]:
                rolloff[t] = k
                break
    return rolloff


@numba.njit(cache=True, nogil=True)
def _spectral_moments_and_rolloff(
    frames: np.ndarray, freq: np.ndarray, freq_squared: np.ndarray, fraction: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n_frames, n_bins = frames.shape
    total = np.zeros(n_frames)
    first = np.zeros(n_frames)
    second = np.zeros(n_frames)
    threshold = np.zeros(n_frames, dtype=np.float32)
    # Two frames per pass: each sum is a serial chain of additions (in bin order, as the
    # library adds), and two frames' independent chains side by side fill each other's
    # waits (the same values).
    for t in range(0, n_frames - 1, 2):
        running_a = running_b = np.float32(0.0)
        a0 = a1 = a2 = b0 = b1 = b2 = 0.0
        for k in range(n_bins):
            value_a, value_b = frames[t, k], frames[t + 1, k]
            running_a += value_a
            running_b += value_b
            wide_a, wide_b = np.float64(value_a), np.float64(value_b)
            a0 += wide_a
            b0 += wide_b
            a1 += freq[k] * wide_a
            b1 += freq[k] * wide_b
            a2 += freq_squared[k] * wide_a
            b2 += freq_squared[k] * wide_b
        total[t], first[t], second[t] = a0, a1, a2
        total[t + 1], first[t + 1], second[t + 1] = b0, b1, b2
        threshold[t], threshold[t + 1] = running_a * fraction, running_b * fraction
    if n_frames % 2:
        t = n_frames - 1
        running = np.float32(0.0)
        m0 = m1 = m2 = 0.0
        for k in range(n_bins):
            value = frames[t, k]
            running += value
            wide = np.float64(value)
            m0 += wide
            m1 += freq[k] * wide
            m2 += freq_squared[k] * wide
        total[t], first[t], second[t] = m0, m1, m2
        threshold[t] = running * fraction
    return total, first, second, _rolloff_bins(frames, threshold)


def spectral_moments_and_rolloff(
    magnitude: np.ndarray, freq: np.ndarray, fraction: float = 0.85
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the zeroth, first and second moments of the spectrum over ``freq``, and
    the rolloff bin, in one pass over a frame-major spectrogram.

    The moments are float64 sums (``[1, f, f**2] @ S``). The rolloff bin is the first bin
    at which the cumulative magnitude reaches ``fraction`` of the frame's total, with the
    cumulative sums in float32, bin by bin, as ``librosa.feature.spectral_rolloff``'s
    ``np.cumsum(S, axis=0)`` computes them, so it reports the same bin.

    Parameters
    ----------
    magnitude : np.ndarray, shape (n_bins, n_frames), non-negative; fastest when
        F-contiguous float32 (librosa's and ``stft_magnitude``'s layout: no copy)
    freq : np.ndarray, shape (n_bins,)

    Returns
    -------
    total, first, second : np.ndarray of float64, shape (n_frames,)
    rolloff : np.ndarray of int64, shape (n_frames,)
    """
    if magnitude.ndim != 2 or magnitude.shape[0] == 0:
        raise ValueError("magnitude must have shape (n_bins, n_frames) with n_bins > 0")
    centres = np.ascontiguousarray(freq, dtype=np.float64)
    if centres.shape != (magnitude.shape[0],):
        raise ValueError(f"freq has shape {freq.shape}; expected ({magnitude.shape[0]},)")
    frames = np.ascontiguousarray(magnitude.T, dtype=np.float32)
    return _spectral_moments_and_rolloff(frames, centres, centres**2, np.float32(fraction))


@numba.njit(cache=True, nogil=True)
def _sliding_median(padded: np.ndarray, width: int) -> np.ndarray:  # pragma: no cover
    n_rows, n_padded = padded.shape
    n_out = n_padded - width + 1
    half = width // 2
    out = np.empty((n_rows, n_out), dtype=padded.dtype)
    window = np.empty(width, dtype=padded.dtype)
    for r in range(n_rows):
        row = padded[r]
        # The window kept sorted: each step removes the value leaving and inserts the one
        # entering, O(width) moves instead of a selection over the whole window.
        for i in range(width):
            window[i] = row[i]
        window.sort()
        out[r, 0] = window[half]
        for t in range(1, n_out):
            leaving = row[t - 1]
            entering = row[t + width - 1]
            # Binary search for a slot holding the leaving value (any of equal ones will do).
            lo, hi = 0, width - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if window[mid] < leaving:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo
            if entering >= leaving:
                while j + 1 < width and window[j + 1] < entering:
                    window[j] = window[j + 1]
                    j += 1
            else:
                while j > 0 and window[j - 1] > entering:
                    window[j] = window[j - 1]
                    j -= 1
            window[j] = entering
            out[r, t] = window[half]
    return out


@numba.njit(cache=True, nogil=True)
def _sliding_median9(padded: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    n_rows, n_padded = padded.shape
    n_out = n_padded - 8
    out = np.empty((n_rows, n_out), dtype=padded.dtype)
    for r in range(n_rows):
        row = padded[r]
        # Devillard's "opt_med9" network: after these 19 compare-exchanges p4 holds the
        # median of nine. Branch-free and independent across t, so the loop vectorises.
        for t in range(n_out):
            p0, p1, p2 = row[t], row[t + 1], row[t + 2]
            p3, p4, p5 = row[t + 3], row[t + 4], row[t + 5]
            p6, p7, p8 = row[t + 6], row[t + 7], row[t + 8]
            p1, p2 = min(p1, p2), max(p1, p2)
            p4, p5 = min(p4, p5), max(p4, p5)
            p7, p8 = min(p7, p8), max(p7, p8)
            p0, p1 = min(p0, p1), max(p0, p1)
            p3, p4 = min(p3, p4), max(p3, p4)
            p6, p7 = min(p6, p7), max(p6, p7)
            p1, p2 = min(p1, p2), max(p1, p2)
            p4, p5 = min(p4, p5), max(p4, p5)
            p7, p8 = min(p7, p8), max(p7, p8)
            p0, p3 = min(p0, p3), max(p0, p3)
            p5, p8 = min(p5, p8), max(p5, p8)
            p4, p7 = min(p4, p7), max(p4, p7)
            p3, p6 = min(p3, p6), max(p3, p6)
            p1, p4 = min(p1, p4), max(p1, p4)
            p2, p5 = min(p2, p5), max(p2, p5)
            p4, p7 = min(p4, p7), max(p4, p7)
            p4, p2 = min(p4, p2), max(p4, p2)
            p6, p4 = min(p6, p4), max(p6, p4)
            p4, p2 = min(p4, p2), max(p4, p2)
            out[r, t] = p4
    return out


@numba.njit(cache=True, nogil=True)
def _sliding_median_network(
    padded: np.ndarray, width: int, lows: np.ndarray, highs: np.ndarray, middle: int
) -> np.ndarray:  # pragma: no cover - compiled
    n_rows, n_padded = padded.shape
    n_out = n_padded - width + 1
    out = np.empty((n_rows, n_out), dtype=padded.dtype)
    # Wire k holds the k-th value of every window of the row; each compare-exchange of the
    # network is one pass over all windows, branch-free, so it vectorises across them.
    wires = np.empty((width, n_out), dtype=padded.dtype)
    for r in range(n_rows):
        for k in range(width):
            wires[k] = padded[r, k:k + n_out]
        for c in range(lows.size):
            low, high = wires[lows[c]], wires[highs[c]]
            for t in range(n_out):
                a, b = low[t], high[t]
                low[t] = min(a, b)
                high[t] = max(a, b)
        out[r] = wires[middle]
    return out


# Windows up to this width take a selection network (70 compare-exchanges for 17, 4x
# faster than the sorted window; 126 for 23); wider ones the sorted window, whose cost
# grows as the width, not as a network's width * log(width)**2. The tests check every
# network up to this width on all 2**width 0/1 inputs.
MAX_NETWORK_WIDTH = 23


@lru_cache(maxsize=16)
def median_network(width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A compare-exchange network that leaves the median of ``width`` (odd) values on one
    wire: Batcher's odd-even merge sort for the next power of two, with the padding wires
    (taken as +inf) and every exchange that cannot reach the median wire removed.

    Returns ``(lows, highs, middle)``: exchange ``c`` puts the smaller of wires
    ``lows[c]`` and ``highs[c]`` on the first, the larger on the second; the median
    ends on wire ``middle``.
    """
    size = 1
    while size < width:
        size *= 2
    exchanges = []
    block = 1
    while block < size:
        step = block
        while step >= 1:
            for j in range(step % block, size - step, 2 * step):
                for i in range(min(step, size - j - step)):
                    if (i + j) // (2 * block) == (i + j + step) // (2 * block):
                        exchanges.append((i + j, i + j + step))
            step //= 2
        block *= 2
    # Padding wires hold +inf: an exchange with one below leaves both where they are,
    # one with a padding wire above a real one only swaps them (renamed, not computed).
    wire = list(range(size))
    infinite = set(range(width, size))
    kept = []
    for a, b in exchanges:
        if b in infinite:
            continue
        if a in infinite:
            infinite.discard(a)
            infinite.add(b)
            wire[a], wire[b] = wire[b], wire[a]
            continue
        kept.append((wire[a], wire[b]))
    middle = wire[width // 2]
    needed = {middle}
    pruned = []
    for a, b in reversed(kept):
        if a in needed or b in needed:
            needed |= {a, b}
            pruned.append((a, b))
    pruned.reverse()
    lows = np.array([a for a, _ in pruned], dtype=np.int64)
    highs = np.array([b for _, b in pruned], dtype=np.int64)
    lows.flags.writeable = highs.flags.writeable = False
    return lows, highs, middle


def sliding_median(padded: np.ndarray, width: int) -> np.ndarray:
    """Median of each run of ``width`` (odd) consecutive values along the rows of ``padded``.

    Equal to ``np.median(sliding_window_view(padded, width, axis=1), axis=-1)``: for an odd
    width the median is one of the window's values, so no rounding is involved (but -0.0
    and 0.0 compare equal, and a window holding both may give either). Rows must be
    finite (NaN never compares equal to itself). Width 9 (the key's harmonic filter)
    runs a vectorised median-of-nine exchange network, other widths up to
    :data:`MAX_NETWORK_WIDTH` a generated one (:func:`median_network`), wider ones a
    sorted window.

    Parameters
    ----------
    padded : np.ndarray, shape (n_rows, n), float32
    width : int, odd, at most n

    Returns
    -------
    np.ndarray, shape (n_rows, n - width + 1), float32
    """
    if width < 1 or width % 2 != 1:
        raise ValueError(f"width must be a positive odd number, got {width}")
    data = np.ascontiguousarray(padded, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] < width:
        raise ValueError(f"expected rows of at least {width} values, got shape {data.shape}")
    if width == 9:
        return _sliding_median9(data)
    if width <= MAX_NETWORK_WIDTH:
        lows, highs, middle = median_network(width)
        return _sliding_median_network(data, np.int64(width), lows, highs, np.int64(middle))
    return _sliding_median(data, np.int64(width))


@numba.njit(cache=True, nogil=True)
def _crossings_up_to(
    y: np.ndarray, positions: np.ndarray, threshold: np.float32
) -> np.ndarray:  # pragma: no cover - compiled
    # out[k]: sign changes between y[j - 1] and y[j] for j = 1 .. positions[k] (ascending).
    out = np.zeros(positions.size, dtype=np.int64)
    k = 0
    while k < positions.size and positions[k] <= 0:
        k += 1
    count = 0
    previous = y[0] < -threshold
    for j in range(1, y.size):
        # Values within the threshold of zero count as zero, and zero as positive.
        negative = y[j] < -threshold
        count += negative != previous
        previous = negative
        while k < positions.size and positions[k] == j:
            out[k] = count
            k += 1
    out[k:] = count
    return out


def zero_crossing_counts(
    y: np.ndarray, n_frames: int, frame_length: int, hop_length: int, threshold: float = 1e-10
) -> np.ndarray:
    """Zero crossings inside each centred, edge-padded frame of ``y``, as
    ``librosa.feature.zero_crossing_rate`` counts them (values with ``|y| <= threshold``
    are zero and zero is positive; pairs of adjacent samples within the frame), in one
    pass with a sliding count and no padded copy of the signal.

    Parameters
    ----------
    y : np.ndarray, shape (n,), float32, n >= 1
    hop_length : int, at most ``frame_length``

    Returns
    -------
    np.ndarray of int64, shape (n_frames,)
    """
    signal = np.ascontiguousarray(y, dtype=np.float32)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError("y must be a non-empty mono signal")
    if not 0 < hop_length <= frame_length:
        raise ValueError("need 0 < hop_length <= frame_length")
    # Frame f spans padded indices f*hop .. f*hop + frame_length - 1; it counts crossings
    # between neighbours inside it. Edge padding repeats the end samples, so crossings only
    # happen between neighbours of y itself: frame f counts those between y positions
    # clip(f*hop - half) and clip(f*hop + frame_length - 1 - half).
    n, half = signal.size, frame_length // 2
    starts = np.arange(n_frames, dtype=np.int64) * hop_length
    ends = np.minimum(starts + frame_length - 1, n + 2 * half - 1)
    positions = np.clip(np.concatenate([starts, ends]) - half, 0, n - 1)
    order = np.argsort(positions, kind="stable")
    counts = np.empty(positions.size, dtype=np.int64)
    counts[order] = _crossings_up_to(signal, positions[order], np.float32(threshold))
    return counts[n_frames:] - counts[:n_frames]


class SignalLevels(NamedTuple):
    """Summary levels of a signal, from one pass (sums in float64)."""

    finite: bool
    """False if any sample is NaN or infinite; the other fields are then 0."""
    peak: float
    mean: float
    mean_square: float
    minimum: float
    maximum: float


@numba.njit(cache=True, nogil=True)
def _signal_levels(
    y: np.ndarray,
) -> tuple[bool, float, float, float, float, float]:  # pragma: no cover - compiled
    total = squares = 0.0
    low = high = np.float64(y[0])
    for i in range(y.size):
        value = np.float64(y[i])
        if not np.isfinite(value):
            return False, 0.0, 0.0, 0.0, 0.0, 0.0
        total += value
        squares += value * value
        low = min(low, value)
        high = max(high, value)
    return True, max(high, -low), total / y.size, squares / y.size, low, high


def signal_levels(y: np.ndarray) -> SignalLevels:
    """Peak, mean, mean square, minimum and maximum of a non-empty float32 signal, and
    whether it is finite, in one pass with no temporary arrays."""
    signal = np.ascontiguousarray(y, dtype=np.float32)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError("y must be a non-empty 1-D signal")
    return SignalLevels(*_signal_levels(signal))


@numba.njit(cache=True, nogil=True)
def _spectral_peaks(
    frames: np.ndarray,
    peak_levels: np.ndarray,
    lo: int,
    hi: int,
    threshold_ratio: np.float32,
    sr: float,
    n_fft: float,
) -> tuple[np.ndarray, np.ndarray, int]:  # pragma: no cover - compiled
    n_frames = frames.shape[0]
    capacity = max(n_frames * ((hi - lo) // 2 + 1), 1)
    mags = np.empty(capacity, dtype=np.float32)
    pitches = np.empty(capacity, dtype=np.float64)
    found = 0
    half = np.float32(0.5)
    two = np.float32(2.0)
    for t in range(n_frames):
        row = frames[t]
        floor = threshold_ratio * peak_levels[t]
        # Rows lo..hi-1 hold the band plus one neighbour on each side; values at or below
        # the floor count as 0, as piptrack's thresholded copy of the spectrum.
        for k in range(lo + 1, hi - 1):
            below, centre, above = row[k - 1], row[k], row[k + 1]
            x_below = below if below > floor else np.float32(0.0)
            x_centre = centre if centre > floor else np.float32(0.0)
            x_above = above if above > floor else np.float32(0.0)
            if not (x_centre > x_below and x_centre >= x_above):
                continue
            a = np.float64(above + below) - 2.0 * np.float64(centre)
            b = np.float64(above - below) / 2.0
            shift = np.float32(0.0) if abs(b) >= abs(a) else np.float32(-b / a)
            gradient = (above - below) / two
            mags[found] = centre + half * gradient * shift
            pitches[found] = (k + np.float64(shift)) * sr / n_fft
            found += 1
    return mags, pitches, found


def spectral_peaks(
    magnitude: np.ndarray, rows: slice, threshold_ratio: float, sr: float, n_fft: int
) -> tuple[np.ndarray, np.ndarray]:
    """Local spectral peaks inside ``rows`` with piptrack's parabolic interpolation.

    For each frame, bins ``k`` in ``rows`` (excluding its first and last row, which serve
    as neighbours) that are local maxima of the spectrum thresholded at ``threshold_ratio``
    times the frame's maximum (strictly above the lower neighbour, at least the upper one:
    ``librosa.util.localmax``), with librosa's float types throughout.

    Returns
    -------
    mags : np.ndarray of float32, the interpolated peak magnitudes
    pitches : np.ndarray of float64, ``(k + shift) * sr / n_fft`` in Hz
    """
    if magnitude.ndim != 2 or magnitude.shape[0] == 0 or magnitude.dtype != np.float32:
        raise ValueError("magnitude must be a float32 array of shape (n_bins, n_frames)")
    start, stop, _ = rows.indices(magnitude.shape[0])
    frames = np.ascontiguousarray(magnitude.T)
    # numpy's vectorised max, per frame (a compiled loop would compare one value at a time).
    mags, pitches, found = _spectral_peaks(frames, frames.max(axis=1), np.int64(start),
                                           np.int64(stop),
                                           np.float32(threshold_ratio), float(sr), float(n_fft))
    return mags[:found], pitches[:found]


@numba.njit(cache=True, nogil=True)
def _sparse_frames_product(
    frames: np.ndarray, step: int, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    n_out = (frames.shape[0] + step - 1) // step
    n_rows = indptr.size - 1
    out = np.empty((n_out, n_rows), dtype=np.float32)
    # Four output frames at a time: each sum is a serial chain of float32 additions (kept
    # in CSR order, as scipy adds), so one chain alone waits on every addition; four
    # independent ones fill that wait (3x faster, the same values).
    j = 0
    while j + 4 <= n_out:
        f0, f1 = frames[j * step], frames[(j + 1) * step]
        f2, f3 = frames[(j + 2) * step], frames[(j + 3) * step]
        for m in range(n_rows):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for k in range(indptr[m], indptr[m + 1]):
                weight, b = data[k], indices[k]
                a0 += weight * f0[b]
                a1 += weight * f1[b]
                a2 += weight * f2[b]
                a3 += weight * f3[b]
            out[j, m], out[j + 1, m], out[j + 2, m], out[j + 3, m] = a0, a1, a2, a3
        j += 4
    for last in range(j, n_out):
        frame = frames[last * step]
        for m in range(n_rows):
            acc = np.float32(0.0)
            for k in range(indptr[m], indptr[m + 1]):
                acc += data[k] * frame[indices[k]]
            out[last, m] = acc
    return out


def sparse_frames_product(basis: scipy.sparse.csr_matrix, frames: np.ndarray,
                          step: int = 1) -> np.ndarray:
    """``basis @ frames[::step].T`` for a float32 CSR ``basis`` (rows, bins) and
    frame-major float32 ``frames`` (n_frames, bins): shape (rows, ceil(n_frames / step)).

    scipy's product wants the spectrogram bin-major and C-contiguous; the STFT is
    frame-major, and transposing its 10 MB (44.1 kHz, 30 s) cost more than the product.
    Here each output frame reads one input frame's contiguous bins, summing each row's
    terms in CSR order in float32 as scipy's ``csr_matvecs`` does.
    """
    if frames.dtype != np.float32 or basis.dtype != np.float32:
        raise ValueError("float32 basis and frames expected")
    rows = np.ascontiguousarray(frames)
    out = _sparse_frames_product(rows, int(step), basis.indptr.astype(np.int64),
                                 basis.indices.astype(np.int64), basis.data)
    return out.T
