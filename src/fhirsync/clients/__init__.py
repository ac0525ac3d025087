"""Clients that fetch records from and send records to another node (FHIR, REST, plug-ins)."""
