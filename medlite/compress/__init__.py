"""Compression for mobile: distillation with attention alignment, head pruning, structured FFN pruning.

``distill`` (teacher -> student, or fine-tuning), ``prune`` (physical removal of attention heads, MoE
hidden units and unused experts from MedLiT), ``agreement`` (where the student looks vs the teacher).
Import the submodules; nothing runs at import.
"""
