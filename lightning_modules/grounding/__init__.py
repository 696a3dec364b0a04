"""FIAN temporal grounding in plain PyTorch: the network, its losses and span decoding."""
