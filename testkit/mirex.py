"""Evaluation measures used for tempo and key (MIREX conventions). Pure functions."""

from __future__ import annotations


def key_score(true_tonic: int, true_mode: str, est_tonic: int, est_mode: str) -> float:
    """MIREX weighted key score: 1 exact, 0.5 fifth, 0.3 relative, 0.2 parallel, else 0."""
    if est_mode == true_mode:
        if est_tonic == true_tonic:
            return 1.0
        if (est_tonic - true_tonic) % 12 in (5, 7):
            return 0.5
        return 0.0
    if est_tonic == true_tonic:
        return 0.2
    relative = (true_tonic + 9) % 12 if true_mode == "major" else (true_tonic + 3) % 12
    return 0.3 if est_tonic == relative else 0.0


def tempo_correct(true_bpm: float, est_bpm: float, tolerance: float = 0.04) -> bool:
    """Within ``tolerance`` (relative) of the true tempo (MIREX "accuracy 1")."""
    return true_bpm > 0 and abs(est_bpm - true_bpm) <= tolerance * true_bpm


def tempo_correct_any_octave(true_bpm: float, est_bpm: float, tolerance: float = 0.04) -> bool:
    """Within tolerance of the tempo or of ×½, ×2, ×⅓, ×3 of it ("accuracy 2")."""
    return any(
        tempo_correct(true_bpm * factor, est_bpm, tolerance)
        for factor in (1.0, 0.5, 2.0, 1.0 / 3.0, 3.0)
    )
