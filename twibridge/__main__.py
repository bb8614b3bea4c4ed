from twibridge.cli import main

main()
