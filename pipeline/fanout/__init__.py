"""Running the DVC pipeline on a Ray cluster: one Ray task per stage, DVC as the source of truth.

DVC runs stages one at a time on one machine (iterative/dvc#755). :mod:`.plan` reads the stage
graph from DVC's own index and keeps the stages DVC does not report up to date; :mod:`.worker`
runs one of them in a clone of the revision on a Ray node and pushes its outputs and run-cache
entry to the shared DVC remote; :mod:`.coordinator` submits the tasks with their upstream tasks
as dependencies, then lets DVC restore every stage locally (``dvc repro`` / ``dvc exp run``), so
dvc.lock, metrics and experiments are written by DVC itself.
"""
