module binslim.test/hello

go 1.21
