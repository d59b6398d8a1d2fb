from mapsim.cli import main

raise SystemExit(main())
