pytest_plugins = ["fleetcheck.plugin"]
