"""The `tactful` command line: thin click commands over library functions."""
from service.cli.main import main

__all__ = ["main"]
