"""Dataset generators, tokenizers and file readers for the attnbench tasks."""
