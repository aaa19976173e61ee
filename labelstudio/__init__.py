"""The Label Studio adapters: label config -> label sets, regions and their geometry, media fetching
with the SSRF guard, the API access check, prediction imports, failure notes, smart-tool prompts.
Uses only the detection core (`detection`) and `runtime`."""
