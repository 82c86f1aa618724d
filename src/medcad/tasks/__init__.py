"""One module per application: wires config -> data -> model -> loss -> metrics."""
