"""`python -m service.cli`: the `tactful` command."""
from service.cli.main import main

main()
