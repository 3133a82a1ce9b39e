"""The MedPLIB web front end: Gradio Blocks over the platform's services.

UI modules (`webapp.ui`) hold layout and event wiring only; handlers (`webapp.handlers`)
turn UI values into service calls and service results into UI values; `webapp.render`
and `webapp.regions` are pure helpers.
"""
