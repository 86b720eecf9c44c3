"""Training, evaluation, checkpoints and distributed set-up."""
