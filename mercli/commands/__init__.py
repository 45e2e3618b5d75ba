"""Click commands, one module per group of commands; ``mercli.cli`` registers them."""
