"""Where and how models run: device choice, precision and memory policy, processes (torchrun + DDP)."""
