from k1.cli import main

main()
