"""What a person sees: the terminal tables, the progress bar, the HTML page and the plots."""
