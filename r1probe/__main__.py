from r1probe.cli import main

main()
