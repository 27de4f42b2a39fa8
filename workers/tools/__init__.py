"""Tools: the Sinch traffic simulator (``ctwa simulate``) and the progress output of long commands."""
