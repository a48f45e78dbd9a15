"""The zkpy server: config, sessions, the request pipeline, client connections."""
