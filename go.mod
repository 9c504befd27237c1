module github.com/conferral/conferral

go 1.26.8

require golang.org/x/image v0.48.0 // indirect
