"""The multi-task DCN-v2 model of the paper, its inference graphs, and how it is evaluated."""
