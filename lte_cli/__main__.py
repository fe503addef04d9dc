from lte_cli.main import cli

cli()
