"""`python -m tailseg` is the `tailseg` command."""

from tailseg.cli import main

if __name__ == "__main__":
    main()
