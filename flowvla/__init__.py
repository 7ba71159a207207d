"""flowvla: composable, typed PyTorch modules for flow-matching vision-language-action policies."""

__version__ = "0.1.0.dev0"
