"""`python -m bagoftricks` is the `bagoftricks` command."""

from bagoftricks.cli import main

if __name__ == "__main__":
    main()
