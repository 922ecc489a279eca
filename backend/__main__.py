from backend.admin.cli import main

main()
