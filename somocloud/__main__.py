from somocloud.cli import main

raise SystemExit(main())
