from medlite.cli import app

app()
