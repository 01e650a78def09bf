"""Using trained tasks: prediction on new images (predict), the task mapper (mapper) and task-agnostic
evaluation (agnostic). Import the modules themselves: training.runner uses the mapper, and agnostic uses
training.runner."""
