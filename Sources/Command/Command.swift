// Command module
