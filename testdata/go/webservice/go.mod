module binslim.test/webservice

go 1.21
