from ally.cli import main

main()
