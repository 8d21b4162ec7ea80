"""What users ask of foveal beyond one training loop, each a library function the CLI calls: fit (training
with its report), evaluate, report, embed, explain files, robust, label checks, self-supervised pretraining."""
