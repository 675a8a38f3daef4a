print("sluicectl")
