"""Using trained tasks: prediction on new images (predict), the task mapper (mapper) and task-agnostic
evaluation (agnostic). Import the modules themselves; this package imports none of them. They build on
training/ (its context, records and loop), and training/ imports nothing from here: main.py hands the mapper's
anchor fitting to the isolated methods' tasks as a callback."""
