from edge_agent.cli import main

# Guarded: process pools started with "spawn" (plot rendering) import the parent's main
# module under another name, and must not run the CLI again.
if __name__ == "__main__":
    raise SystemExit(main())
