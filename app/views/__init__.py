"""One file per page of the app, listed in menu order by drnet_app.navigation."""
