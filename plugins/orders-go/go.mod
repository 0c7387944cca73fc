module weir.example/orders-go

go 1.24
