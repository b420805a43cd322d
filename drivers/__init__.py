"""Hardware and simulated I/O at the edge: cameras, PTZ, mic arrays, the simulated room."""
