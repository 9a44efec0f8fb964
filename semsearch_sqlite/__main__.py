from semsearch_sqlite.cli import cli

if __name__ == "__main__":
    cli(prog_name="semsearch-sqlite")
