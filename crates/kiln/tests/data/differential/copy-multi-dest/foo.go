foo-go
