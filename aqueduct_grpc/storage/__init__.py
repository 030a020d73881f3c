"""What the core keeps: the database tables and the image files store."""
