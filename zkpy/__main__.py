from zkpy.cli import main

raise SystemExit(main())
