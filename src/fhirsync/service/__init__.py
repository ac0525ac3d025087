"""Domain services the HTTP routes and the CLI call: FHIR, REST, validation, import, seed."""
