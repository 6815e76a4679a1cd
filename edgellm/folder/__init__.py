"""The model folder and its documents: reading and checking config.json (`model_folder`,
`config`), generation_config.json (`generation_config`), the graph's inputs and outputs
(`graph_check`), the model card (`model_card`) and the one JSON reader (`json_file`).

What export writes and the runtime reads meet here; nothing in this room runs the model.
"""
