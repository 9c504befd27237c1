module github.com/conferral/conferral

go 1.26.8
