#!/usr/bin/env python
from guahao.cli import main

if __name__ == "__main__":
    main()
