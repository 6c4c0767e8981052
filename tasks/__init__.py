"""The law tasks of taggerflow, one module per stage; each calls one function of the core."""
