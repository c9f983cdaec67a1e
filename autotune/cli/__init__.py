"""The command line: parsing arguments, the commands, the live display, interrupts."""
