import sys

if len(sys.argv) > 1 and sys.argv[1] in ("admin", "demo"):
    from services.identity.cli import main as command

    command(sys.argv[1:])
else:
    from services.identity.app import IdentitySettings, create_app
    from shared.service import main

    main(IdentitySettings, create_app)
